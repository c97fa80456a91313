function varargout = mexClustering2(varargin)
% Octave stand-in for Kilosort2's mexClustering2 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexClustering2', nargout, varargin{:});
end
