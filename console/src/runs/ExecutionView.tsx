export function ExecutionView({ executionId, jaegerUrl }: { executionId: string; jaegerUrl: string | null }) {
  return <div>Execution {executionId} {jaegerUrl}</div>;
}
