"""Trainer: builds base models, fine-tunes LoRA adapters on collected conversations, evaluates them."""
