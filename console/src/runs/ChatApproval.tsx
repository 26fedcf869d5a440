// The chat playground's tool approval: when a chat run's agent waits on a tool call (the
// stream's node.waiting carries it), the same panel as the execution view's node detail; the
// chat's stream goes on once it is answered.
import { ApprovalPanel, approvalOf } from "./ApprovalPanel";

export function ChatApproval({
  executionId,
  nodeId,
  waiting,
  onDone,
}: {
  executionId: string;
  nodeId: string;
  waiting: unknown;
  onDone: () => void;
}) {
  const approval = approvalOf(waiting);
  if (!approval) return null;
  return (
    <div data-testid="chat-approval">
      <ApprovalPanel
        key={approval.key ?? approval.tool}
        executionId={executionId}
        nodeId={nodeId}
        approval={approval}
        onSubmitted={onDone}
      />
    </div>
  );
}
