function n = histcounts(x, edges)
% Octave 7 stand-in for MATLAB's histcounts(x, edges): bins [e(k), e(k+1)), the last one closed.
c = histc(double(x(:)), edges(:));
if isempty(c)
    n = zeros(1, numel(edges) - 1);
    return
end
c = c(:)';
c(end-1) = c(end-1) + c(end);
n = c(1:end-1);
end
