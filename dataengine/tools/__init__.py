"""Commands over finished datasets: filter, eval, show, stats, export, synth."""
