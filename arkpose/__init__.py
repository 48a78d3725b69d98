"""arkpose: bottom-up multi-person pose estimation by heatmap-guided adaptive keypoint
regression (Sun et al.), with the paper's ablations as re-runnable notebooks."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy: `import arkpose` stays light; `arkpose.predict` pulls in torch and the model code.
    if name == "predict":
        from arkpose.inference import predict

        return predict
    raise AttributeError(f"module 'arkpose' has no attribute {name!r}")
