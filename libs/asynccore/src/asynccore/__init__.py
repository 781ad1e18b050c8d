"""asynccore: what every asyncstack service stands on."""
