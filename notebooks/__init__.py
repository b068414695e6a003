"""The notebooks: python -m notebooks.make runs them; support.py is what they import."""
