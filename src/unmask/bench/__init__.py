"""unmask.bench"""
