"""The parts of the one reply path (`plugin.assistant`) that every channel's turn goes through: its errors, the turn
itself, and the model server it is relayed to."""
