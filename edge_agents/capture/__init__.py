"""The capture agent: a folder of camera images in, one frame per image out."""
