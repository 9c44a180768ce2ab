"""The pipeline's stages. Each folder holds a thin KFP component (component.py) and the stage's
logic as plain Python (logic.py) that tests call directly."""
