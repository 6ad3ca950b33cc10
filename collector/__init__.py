"""Collector: records support conversations, drafts and agents' reviews, and turns them into training data."""
