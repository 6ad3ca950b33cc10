"""Opt-in differentially private LoRA training with Opacus, user-level: the unit protected is a customer."""
