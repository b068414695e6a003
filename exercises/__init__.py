"""The exercises: backprop.py is the skeleton students copy (installed as shortcut_gradients.exercises)."""
