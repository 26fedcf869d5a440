export function RunPage({ workflowId }: { workflowId: string }) {
  return <div>Run {workflowId}</div>;
}
