"""Trainers: the CycleGAN teacher recipe, the distiller, and the loop and machinery they share."""
