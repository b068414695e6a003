"""The notebooks: python -m notebooks.make runs them; they import shortcut_gradients.teaching.notebook."""
