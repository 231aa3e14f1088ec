"""Ray Data assembly of the engine's stages. Nothing but wiring lives here."""
