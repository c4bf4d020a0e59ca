from comfyver.cli import main

raise SystemExit(main())
