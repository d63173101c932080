"""unmask.diffusion"""
