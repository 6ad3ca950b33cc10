"""The feedback loop: refresh (export, train, evaluate, gate, apply), the rollback guard, the scheduler, their CLI."""
