"""Connectors to support platforms (Chatwoot): their webhook payloads in, drafts and notes back out."""
