"""The one guarded media decoder (container/format whitelist, pixel caps) and resizing."""
