"""The recognition study: TSM on every codec at equal bpp in the D-NeRV paper's "train" and "test"
settings, with seeds (`python -m recognition.study`; see recognition.study.cli)."""
