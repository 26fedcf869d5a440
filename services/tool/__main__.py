from services.tool.server import main

main()
