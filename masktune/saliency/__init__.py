"""Saliency: batched XGradCAM (`xgradcam`), the saliency file's read side (`file`) and the streamed,
resumable step that writes it (`compute`)."""
