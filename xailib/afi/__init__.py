"""AfI: Attacking for Interpretability (Wu et al.)."""
