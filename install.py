"""Run by the webui at start-up. DeepCache needs nothing beyond what the webui already has (torch, gradio),
so there is nothing to install."""
