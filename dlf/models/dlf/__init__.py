"""The DLF family: blocks, the model and its loss terms."""
