"""Compression building blocks: quantisation (quant), entropy coding (entropy), keyframe images (images)."""
