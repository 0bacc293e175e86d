"""migrations/versions"""
