"""The memorisation audit: canary exposure on a shadow adapter, an extraction probe on the candidate, a verdict."""
