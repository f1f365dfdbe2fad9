"""Turning synced records into scores, reasons, grades and rep matches.

Turning synced records into decisions: features, CatBoost training and the per-tenant model
registry, predictions with reasons, grades with hysteresis, and lead-to-rep matching.
"""
