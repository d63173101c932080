"""unmask.sampling"""
