"""RunPod serverless worker for comfyver versions."""
