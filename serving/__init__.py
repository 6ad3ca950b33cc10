"""Serving: runs vLLM with LoRA, hot-swaps adapter versions behind one public model name, rolls back."""
