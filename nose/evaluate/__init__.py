"""Quality (G-TransEval Java→Python) and efficiency measurements for any loadable model."""
