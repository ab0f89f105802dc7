"""The model.

Plain heads (``nn.Module``), the LightningModule that trains them, schedules and the metrics.
"""
