"""The data layer: sources decoded once into a memory-mapped cache, and the DataModule.

Folders, zips and npz files are listed, decoded (in parallel) and cached; the LightningDataModule
serves batches from memory.
"""
