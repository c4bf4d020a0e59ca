"""`comfyver ui`: ComfyUI's own page for a locked version, on this machine, with every queued prompt run on the
RunPod endpoint that serves the version (`serve`, the `bridge` it talks to, and `nodes/comfyver_remote`, the
extension loaded into that ComfyUI, which imports only ComfyUI and the standard library).

May import base, realize and ship (the job client)."""
