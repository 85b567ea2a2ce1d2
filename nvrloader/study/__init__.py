"""Studies made of many builds: `python -m nvrloader.study rd ...` sweeps codecs x bpp levels and
compares the rate-distortion curves with Bjøntegaard deltas (see `nvrloader.study.rd`)."""
