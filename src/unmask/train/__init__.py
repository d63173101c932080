"""unmask.train"""
