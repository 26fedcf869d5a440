from services.workflow.server import main

main()
