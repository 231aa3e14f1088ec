"""The contract: traj.json codec, shard reader/writer, manifest, validation, media extensions."""
