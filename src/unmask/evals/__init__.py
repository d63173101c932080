"""unmask.evals"""
