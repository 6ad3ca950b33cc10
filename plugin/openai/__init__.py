"""The OpenAI-compatible API below HTTP: its wire format (`protocol`) and how a call is served (`serving`)."""
