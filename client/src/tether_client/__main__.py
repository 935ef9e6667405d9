from tether_client.cli import main

raise SystemExit(main())
