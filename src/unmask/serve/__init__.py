"""unmask.serve"""
