"""Example .tdsl programs, shipped as package data; ``tritondsl.models.ZOO`` names them."""
