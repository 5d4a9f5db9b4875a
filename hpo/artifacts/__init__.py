"""A study's artifact store and each trial's files in it: learning curves, confusion matrix,
weights and checkpoints' home."""
