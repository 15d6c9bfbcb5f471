"""Task-shaped data: Java methods the project may ship or harvest, and the self-distilled
transcripts that calibration and healing read (DESIGN.md, "Task-shaped data")."""
