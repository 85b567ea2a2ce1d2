"""nvrloader: a video dataset as one neural archive, loaded back as a PyTorch Dataset."""
