"""Model acquisition (timm hub, local checkpoint, trained here), loading and tap discovery."""
