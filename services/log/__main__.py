from services.log.server import main

main()
