from services.ai.server import main

main()
