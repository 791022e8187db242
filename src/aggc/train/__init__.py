"""The training stage: `python -m aggc.train model=... data=... strategy=... clip=... seed=...`."""
